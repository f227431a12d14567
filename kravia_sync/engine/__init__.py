"""The engine: the stages of a pass, from reading sources to the case driver.

read and diff (`diff`, `plan`, `worklist`) → the gate before each call (`gate`) → the case
driver (`driver`, with the mirror of Kravia's cases in `mirror`) → payments and credit notes
(`forwarding`) → status pull-back and holds; `reconcile` runs a pass, `canary` is the first
contact with a new Kravia, `resolve` lets a person settle what was parked.
"""
