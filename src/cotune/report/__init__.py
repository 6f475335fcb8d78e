"""Reports on finished runs: the Markdown and HTML report, its plots, and the advisor's costs and
recommendation. Reads run directories the runner wrote; the runner never needs it."""
