"""canary-watcher: judges canary analysis and rolls back."""
