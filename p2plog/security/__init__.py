"""TLS for p2plog: the cluster CA, node certificates, the cluster secret and ssl contexts."""
