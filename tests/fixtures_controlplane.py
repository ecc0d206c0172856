"""pytest fixtures for the real kube-apiserver + etcd (see acns_operator.local)."""
