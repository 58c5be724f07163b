"""Services: one request or command worth of work against the database, shared by web, bot and CLI."""
