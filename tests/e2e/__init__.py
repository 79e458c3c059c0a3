"""End-to-end runs: `inv build-all`, the service and the LUMI migration as a person runs them."""
