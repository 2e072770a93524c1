"""Pure logic: plan models, the SkyDNS record format, stores and safeguards. No I/O clients."""
