"""Several runs from one launch: argument sets from a sweep file (:mod:`.expand`), the run
names (:mod:`.naming`), the parent run they nest under (:mod:`.parentrun`) and the summary
it keeps when they have ended (:mod:`.summary`, pure).
"""
