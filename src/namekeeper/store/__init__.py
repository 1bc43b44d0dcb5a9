"""Durable state behind one contract (`interface.StoreBackend`): SQLite (`sqlite`), PostgreSQL
(`postgres`), or a third party's, chosen by ``[store] url`` (`backends`).

Callers import what they use from the module that defines it; nothing is re-exported here.
"""
