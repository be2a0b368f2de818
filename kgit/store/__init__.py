"""Where bytes live: the git adapter (``git_ops``, the only module that runs ``git``, with
``git_batch``, the one reader of many objects in one ``git cat-file --batch``), the DVC
adapter (``dvc_ops``/``storage``, the only modules that import DVC), DVC lock repair, the crash journal
(``txn``) and the installation of git hook shims. Knows nothing about releases or models."""
