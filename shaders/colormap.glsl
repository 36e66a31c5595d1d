// Colour maps shared by the display shaders (included by the loader in viewer/gl_canvas.py).
// Polynomial fits: turbo (Google, A. Mikhailov; fit by R. Du), viridis (fit by M. Zucker).
// viewer/colormap.py evaluates the same polynomials in numpy for screenshots and videos.

vec3 turbo(float x) {
    const vec4 kRed4 = vec4(0.13572138, 4.61539260, -42.66032258, 132.13108234);
    const vec4 kGreen4 = vec4(0.09140261, 2.19418839, 4.84296658, -14.18503333);
    const vec4 kBlue4 = vec4(0.10667330, 12.64194608, -60.58204836, 110.36276771);
    const vec2 kRed2 = vec2(-152.94239396, 59.28637943);
    const vec2 kGreen2 = vec2(4.27729857, 2.82956604);
    const vec2 kBlue2 = vec2(-89.90310912, 27.34824973);
    x = clamp(x, 0.0, 1.0);
    vec4 v4 = vec4(1.0, x, x * x, x * x * x);
    vec2 v2 = v4.zw * v4.z;
    return clamp(vec3(dot(v4, kRed4) + dot(v2, kRed2),
                      dot(v4, kGreen4) + dot(v2, kGreen2),
                      dot(v4, kBlue4) + dot(v2, kBlue2)), 0.0, 1.0);
}

vec3 viridis(float t) {
    const vec3 c0 = vec3(0.2777273272234177, 0.005407344544966578, 0.3340998053353061);
    const vec3 c1 = vec3(0.1050930431085774, 1.404613529898575, 1.384590162594685);
    const vec3 c2 = vec3(-0.3308618287255563, 0.214847559468213, 0.09509516302823659);
    const vec3 c3 = vec3(-4.634230498983486, -5.799100973351585, -19.33244095627987);
    const vec3 c4 = vec3(6.228269936347081, 14.17993336680509, 56.69055260068105);
    const vec3 c5 = vec3(4.776384997670288, -13.74514537774601, -65.35303263337234);
    const vec3 c6 = vec3(-5.435455855934631, 4.645852612178535, 26.3124352495832);
    t = clamp(t, 0.0, 1.0);
    return clamp(c0 + t * (c1 + t * (c2 + t * (c3 + t * (c4 + t * (c5 + t * c6))))), 0.0, 1.0);
}

// What a texel shows in each display mode: 0 rgb, 1 depth (turbo, near = warm, misses grey),
// 2 opacity (viridis). `range` is the depth interval mapped onto the colour map.
vec3 display_colour(vec4 texel, int mode, vec2 range) {
    if (mode == 1) {
        float d = texel.r;
        if (d <= 0.0) return vec3(0.12);
        return turbo(1.0 - (d - range.x) / max(range.y - range.x, 1e-6));
    }
    if (mode == 2) return viridis(texel.r);
    return texel.rgb;
}
