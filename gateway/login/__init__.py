"""Signing in and out: the endpoints (:mod:`.handlers`), the failed-login throttle
(:mod:`.throttle`), the CSRF cookie of the forms (:mod:`.csrf`) and reading their bodies
(:mod:`.forms`)."""
