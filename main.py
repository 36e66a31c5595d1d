"""Neural scene viewer: entry point.

    python main.py                      open the viewer on the bundled demo scene
                                        (view's options work here too: --quit-after S --screenshot F)
    python main.py view SCENE           open the viewer on a scene folder
    python main.py make-scene OUT       write the procedural dataset
    python main.py train DATA --out S   fit the NeRF teacher
    python main.py distill S --backend kilonerf|r2l
    python main.py pipeline DATA --out S [--stages teacher,kilonerf,r2l]
                                        teacher then students, resumable
    python main.py eval S [--backend all]
    python main.py render S --out FILE.mp4
    python main.py bench S [--backends all]

See README.md for every option.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    from models.cli import build_parser, run

    parser = build_parser()
    if not argv or argv[0] not in parser._subparsers._group_actions[0].choices:  # noqa: SLF001
        if not argv:
            argv = ["view"]
        elif argv[0] not in ("-h", "--help"):
            # `python main.py SCENE` and `python main.py --quit-after S ...` open the viewer too
            argv = ["view", *argv]
    if argv[0] == "view":
        args = parser.parse_args(argv)
        if args.scene is not None:
            from pathlib import Path

            if not (Path(args.scene) / "scene.json").is_file():
                what = "no such command or folder" if not Path(args.scene).exists() else "holds no scene.json"
                print(f"error: {args.scene}: {what} (commands: {', '.join(sorted(parser._subparsers._group_actions[0].choices))})",  # noqa: SLF001
                      file=sys.stderr)
                return 2
        import os

        if (sys.platform.startswith("linux") and not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY")
                and not os.environ.get("QT_QPA_PLATFORM")):
            print("error: no display to open the viewer on (DISPLAY is not set); `bash scripts/run` starts a "
                  "virtual X server (Xvfb) for it", file=sys.stderr)
            return 2
        try:
            from viewer.app import run_viewer
        except ImportError as e:  # viewer dependencies missing
            print(f"error: the viewer needs PyQt6 and PyOpenGL ({e}); install with: pip install -e .", file=sys.stderr)
            return 2
        return run_viewer(args.scene, sys.argv[:1], device=args.device, screenshot=args.screenshot,
                          quit_after=args.quit_after, accel=args.accel, render_process=args.render == "process")
    return run(argv, parser)


if __name__ == "__main__":
    sys.exit(main())
