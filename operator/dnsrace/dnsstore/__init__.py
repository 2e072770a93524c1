"""The DNS data store CoreDNS serves from: an etcd implementation of ``core.stores.RecordStore``."""
