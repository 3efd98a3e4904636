"""Reports a user can send: chart data (pure), charts (matplotlib), Markdown and HTML."""
