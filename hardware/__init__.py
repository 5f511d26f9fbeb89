"""fleetsim.hardware: validated hardware data, the lowest layer.

* ``specs``   frozen pydantic models (``GPUSpec``, ``LinkSpec``, ``MemoryTierSpec``,
  ``NodeSpec``, ``PoolSpec``, ``ClusterSpec``) in SI units
* ``catalog`` the YAML catalog (one file per part) with name/alias lookup
* ``cluster`` cluster shorthand (``16xH100+32xL4``) and files, rank-to-link helpers
* ``report``  catalog summaries in human units for the CLI and dashboard
* ``errors``  the error types every layer raises
"""
