"""The MTA side of the milter: the pymilter adapter (collect, then apply a Plan) and the live
facts it decides on. No policy here: that is the gateway's and the core's.
"""
