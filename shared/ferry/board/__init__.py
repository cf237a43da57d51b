"""`ferry board`: a live, read-only web page of every service x environment (an ASGI app)."""
