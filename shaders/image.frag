#version 330 core
// One frame: colour, or depth/opacity through a colour map.
#include "colormap.glsl"

in vec2 v_uv;
out vec4 frag_colour;

uniform sampler2D u_image;
uniform int u_mode;      // 0 rgb, 1 depth, 2 opacity
uniform vec2 u_range;    // depth range for the colour map

void main() {
    frag_colour = vec4(display_colour(texture(u_image, v_uv), u_mode, u_range), 1.0);
}
