"""One module per CLI verb; each defines ``command`` (a click command) and imports heavy
libraries inside the command body only, so ``chase-deploy --help`` stays fast."""
