"""The GraphQL edge: thin resolvers, typed error unions, bearer-token auth, the ASGI app."""
