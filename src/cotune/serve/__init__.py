"""`cotune serve`: any LM behind an OpenAI-compatible HTTP server (`server.serve`, `server.start_server`)."""
