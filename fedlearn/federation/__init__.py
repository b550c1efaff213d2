"""The Flower side: who takes part, the apps' round logic, reply checks, the scored strategy, coalition
models for scoring, peer votes over Flower messages, and the engines that run it all (Ray or in process).

``server/`` and ``clients/`` are thin Flower apps built from :mod:`.coordinator` and :mod:`.institution`.
"""
