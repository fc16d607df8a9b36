"""Small studies that run on a CPU in minutes and show the methods differ (``make study``)."""
