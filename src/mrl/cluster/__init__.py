"""Beyond one machine on Ray: encode and build a sharded index with Ray Data (:mod:`mrl.cluster.build`), serve its
shards as replicated Ray Serve deployments behind one router (:mod:`mrl.cluster.serving`).

Needs ``pip install 'mrl[ray]'``; nothing else in mrl imports Ray.
"""
