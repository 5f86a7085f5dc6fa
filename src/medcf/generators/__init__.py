"""medcf.generators"""
