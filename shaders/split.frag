#version 330 core
// Two frames of the same view (comparator). Each side of the divider shows a source: image A,
// image B, the reference image (ground truth or the teacher's render), or a difference heatmap:
// the mean absolute RGB difference of two of them through turbo, u_heat_max at the top.
// Side-by-side panes are two draws with the divider past the edge (u_divider = 2).
// viewer/compare.py (heatmap) computes the same colours in numpy.
#include "colormap.glsl"

in vec2 v_uv;
out vec4 frag_colour;

uniform sampler2D u_left;     // image A
uniform sampler2D u_right;    // image B
uniform sampler2D u_ref;      // reference image (rgb)
uniform int u_left_src;       // 0 A, 1 B, 2 reference, 3 |A-B|, 4 |A-ref|, 5 |B-ref|
uniform int u_right_src;
uniform int u_mode;
uniform vec2 u_range;
uniform float u_divider;      // 0..1 across the image
uniform float u_line_width;   // in uv units
uniform float u_heat_max;     // error at the top of the colour map

vec3 heat(vec4 x, vec4 y) {
    float e = dot(abs(x.rgb - y.rgb), vec3(1.0 / 3.0));
    return turbo(e / max(u_heat_max, 1e-6));
}

vec3 source(int s) {
    if (s == 0) return display_colour(texture(u_left, v_uv), u_mode, u_range);
    if (s == 1) return display_colour(texture(u_right, v_uv), u_mode, u_range);
    if (s == 2) return clamp(texture(u_ref, v_uv).rgb, 0.0, 1.0);
    vec4 a = texture(u_left, v_uv);
    vec4 b = texture(u_right, v_uv);
    vec4 r = texture(u_ref, v_uv);
    if (s == 3) return heat(a, b);
    if (s == 4) return heat(a, r);
    return heat(b, r);
}

void main() {
    vec3 c = source(v_uv.x < u_divider ? u_left_src : u_right_src);
    if (abs(v_uv.x - u_divider) < u_line_width) c = vec3(1.0, 0.85, 0.2);
    frag_colour = vec4(c, 1.0);
}
