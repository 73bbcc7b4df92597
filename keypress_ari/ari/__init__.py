"""Our own thin ARI client: REST (``client`` over the keep-alive pool ``rest_pool``), the
events websocket (``stream``), typed events (``events``), errors and credentials."""
