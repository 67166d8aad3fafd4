"""JupyterLab in the book's environment: ``make lab``.

``python -m dlbook.lab install-kernel`` registers the kernel ``dlbook`` inside the
virtual environment (``<venv>/share/jupyter/kernels/dlbook``): it runs this
environment's Python, which has the library, torch and ``ipywidgets`` (so the
``tqdm.auto`` progress bars of the training loops draw as widgets). The notebooks
themselves ask for the ``python3`` kernel, which in this environment is the same
interpreter; ``dlbook`` is the name to pick in the launcher.
"""

from __future__ import annotations

import argparse
import sys

KERNEL_NAME = "dlbook"
DISPLAY_NAME = "dlbook (the book's environment)"


def install_kernel(prefix: str | None = None) -> str:
    """Install the ``dlbook`` kernel spec under ``prefix`` (default: this environment)."""
    from ipykernel.kernelspec import install

    return install(kernel_name=KERNEL_NAME, display_name=DISPLAY_NAME,
                   prefix=prefix or sys.prefix)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dlbook.lab", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["install-kernel"])
    parser.add_argument("--prefix", default=None, help="environment prefix (default: this one)")
    args = parser.parse_args(argv)
    print(f"installed the {KERNEL_NAME!r} kernel in {install_kernel(args.prefix)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
