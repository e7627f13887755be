"""The gateway behind Envoy or Istio: answering ext_authz checks (see README.md in this package)."""
