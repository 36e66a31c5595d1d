#version 330 core
// Scene guides (dataset camera frustums, bounding box): world-space line vertices with a colour,
// drawn as GL_LINES over the frame. u_view_proj is the world -> clip matrix of the view on
// screen (viewer/scene_guides.py: view_projection).
layout(location = 0) in vec3 a_position;
layout(location = 1) in vec3 a_colour;
out vec3 v_colour;

uniform mat4 u_view_proj;

void main() {
    v_colour = a_colour;
    gl_Position = u_view_proj * vec4(a_position, 1.0);
}
