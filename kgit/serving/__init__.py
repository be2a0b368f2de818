"""TF Serving: the serving folder kgit writes (``layout``) and its configuration (``serving_config``)."""
