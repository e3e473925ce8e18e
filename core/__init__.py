"""The foundation every package of pomocore builds on: settings, key names, the event
and its validation, periods, the exception tree, ids and the category taxonomy. It imports
nothing else of ours."""
