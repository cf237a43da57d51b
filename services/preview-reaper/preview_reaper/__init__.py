"""preview-reaper: reaps preview environments past their TTL or quota."""
