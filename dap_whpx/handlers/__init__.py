"""Request handlers, one module per topic; importing them registers them."""


def load() -> None:
    from dap_whpx.handlers import (  # noqa: F401
        breakpoints,
        evaluate,
        execution,
        lifecycle,
        memory,
        stack,
    )
