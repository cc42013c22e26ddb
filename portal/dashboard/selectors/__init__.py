"""Reads for the programme pages, one module per page (overview, review, directory, reports,
monthly_report, cluster, cohorts), and `figures`, the ledger figures they all count the same way.

Every figure is one aggregate query (or a fixed few), whatever the number of organisations,
students, ledger entries or samples: the pages' query counts do not grow with the programme.
"""
