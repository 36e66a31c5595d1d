#version 330 core
// Two frames of the same view side by side (comparator): left of the divider the first
// texture, right of it the second, with a thin divider line.
#include "colormap.glsl"

in vec2 v_uv;
out vec4 frag_colour;

uniform sampler2D u_left;
uniform sampler2D u_right;
uniform int u_mode;
uniform vec2 u_range;
uniform float u_divider;      // 0..1 across the image
uniform float u_line_width;   // in uv units

void main() {
    vec4 texel = v_uv.x < u_divider ? texture(u_left, v_uv) : texture(u_right, v_uv);
    vec3 c = display_colour(texel, u_mode, u_range);
    if (abs(v_uv.x - u_divider) < u_line_width) c = vec3(1.0, 0.85, 0.2);
    frag_colour = vec4(c, 1.0);
}
