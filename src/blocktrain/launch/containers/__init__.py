"""Tasks inside a container: the profile's ``container`` key and the command line of each
runtime (:mod:`.runtime`, pure), and the checks, before anything is created, that the runtime
and image exist, with the image's digest (:mod:`.images`).
"""
