"""medcf.data"""
