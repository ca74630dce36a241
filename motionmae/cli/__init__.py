"""Layer 8: the `motionmae` command line (`motionmae.cli.main:main`), one module per command group."""
