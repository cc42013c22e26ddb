"""The programme managers' pages, one module per page. Selectors read; services write; every
page is behind the gate (`access.programme_manager_required`)."""
