"""The app's tabs, one module each: `TITLE`, `SHOWN_TO` (who sees the tab) and `build(ctx)`,
which makes the tab's components and wires its events. Tabs never import each other."""
