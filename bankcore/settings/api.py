"""Partner API settings (DRF, JWT, OpenAPI, throttling)."""
