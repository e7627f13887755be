"""Route maps: how an upstream's HTTP API maps onto Cedar requests (see ``adapters/README.md``).

``pathnorm`` turns a raw request path into the one canonical form the upstream will see, or rejects
it; ``routemap`` loads the declarative TOML maps and matches method + canonical path to a ``Route``
(action, resource type, tenant and id parameters, data categories, response fields, lifted body
fields). Nothing here decides anything: an unmatched request is simply unmapped, and the authorizer
denies it by default.
"""
