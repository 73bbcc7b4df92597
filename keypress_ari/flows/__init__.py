"""The catalog's model (flow groups, flows, routers, buyers, numbers), its YAML form and
validation, filters and matching: pure, no I/O."""
