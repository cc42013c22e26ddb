"""Forms of the programme pages, one module per page."""
