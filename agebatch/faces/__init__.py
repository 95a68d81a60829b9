"""Faces in photos: BlazeFace detection (`blazeface`) and alignment onto a model's crop geometry (`align`)."""
