"""{{ cookiecutter.project_name }}: recognising drone targets in images and video.

- :mod:`.entry`: the entry functions (generate, train, evaluate, predict);
- :mod:`.data`: the dataset through blocktrain's data layer; :mod:`.model`: the network;
- :mod:`.synthetic`: the synthetic sky scenes; :mod:`.generate`: writing them as a dataset;
- :mod:`.video`: reading and writing YUV4MPEG2 videos.
"""
