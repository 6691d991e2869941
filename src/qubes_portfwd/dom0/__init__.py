"""The controller inside stock qubesd: a `qubes.ext` extension and its host over `app.domains`."""
