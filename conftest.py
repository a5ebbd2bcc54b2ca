pytest_plugins = ["cachelab.testing"]
