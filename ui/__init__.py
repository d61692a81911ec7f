"""The Gradio face of the project: the shell (`ui.shell.build_app`) and one module per tab
(`ui/tabs/`), over the library in `pipeline/` and `hub/`, which know nothing of Gradio."""
