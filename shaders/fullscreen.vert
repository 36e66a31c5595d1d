#version 330 core
// A full-viewport quad from gl_VertexID (draw 4 vertices as a triangle strip, no buffers).
// Images are uploaded top row first, so v is flipped: the top of the viewport samples row 0.
out vec2 v_uv;

void main() {
    vec2 pos = vec2(float(gl_VertexID & 1), float((gl_VertexID >> 1) & 1)) * 2.0 - 1.0;
    v_uv = vec2(pos.x * 0.5 + 0.5, 0.5 - pos.y * 0.5);
    gl_Position = vec4(pos, 0.0, 1.0);
}
