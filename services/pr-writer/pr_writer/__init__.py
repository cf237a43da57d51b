"""pr-writer: turns promotion commands into one-line pull requests on the GitOps repository."""
