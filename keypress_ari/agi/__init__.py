"""FastAGI: our own server and the commands the FastAGI call mode sends."""
