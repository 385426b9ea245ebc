"""The HTTP layer: app and lifespan (app), routes, the error table, upload reading, middleware, the h11
protocol with the service's limits, the uvicorn server that drains on SIGTERM, the lifecycle, the page.

It calls into service.core; nothing in service.core imports it.
"""
