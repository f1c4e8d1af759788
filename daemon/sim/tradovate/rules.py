"""Tradovate's rules as the simulator keeps them: its paths, and the budgets per client address
(renewals 15 and failed logins 5 per rolling hour, a 15 s penalty ticket past them)."""

from __future__ import annotations

LOGIN_PATH = "/v1/auth/accesstokenrequest"
RENEW_PATH = "/v1/auth/renewaccesstoken"
ACCOUNTS_PATH = "/v1/account/list"
AUTHORIZE_PATH = "/authorize"  # the TradingView route, on its own host (no /v1)
CONTRACT_FIND_PATH = "/v1/contract/find"
CONTRACT_SUGGEST_PATH = "/v1/contract/suggest"
MATURITY_PATH = "/v1/contractMaturity/item"
TV_ACCOUNTS_PATH = "/accounts"  # TradingView REST: the `D…` account ids the desk's readers use

DEMO_SEC = "demo-sec"
REAL_TOKEN_LIFETIME_S = 4_800.0
BUDGET_WINDOW_S = 3_600.0
PENALTY_S = 15.0
RENEW_BUDGET = 15
LOGIN_FAILURE_BUDGET = 5
