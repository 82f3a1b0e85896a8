"""Start the Streamlit web demo (``brainseg3d app``)."""

from __future__ import annotations


def run(args) -> int:
    """Run the command; returns its exit status."""
    from brainseg3d.app.launch import launch

    kwargs = {} if args.max_upload_mb is None else {"max_upload_mb": args.max_upload_mb}
    return int(launch(port=args.port, **kwargs))


def add_parser(sub) -> None:
    """Register the ``app`` command on the top-level subparsers."""
    s = sub.add_parser("app", help="start the web demo (Streamlit) on http://127.0.0.1:PORT (needs brainseg3d[web])")
    s.add_argument("--port", type=int, default=8501, help="TCP port on 127.0.0.1 (0: a free one)")
    s.add_argument("--max-upload-mb", type=int, default=None, help="upload cap in MB, all files of one upload together (default: the app's, brainseg3d.app.core.MAX_UPLOAD_MB)")
    s.set_defaults(func=run)
